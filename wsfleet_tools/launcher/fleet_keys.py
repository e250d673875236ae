"""The local fleet's credentials in its state dir: the token signing key, the operators'
admin token, the registry key (from which each pod gets a key of its own) and the server
API's keys."""

from __future__ import annotations

from pathlib import Path

from server_api.keys import ensure_local_key
from wsfleet import fleet_ca
from wsfleet.admin_token import TOKEN_FILE, ensure_admin_token
from wsfleet.registry.signing import (
    KEY_FILE,
    PodSigner,
    ensure_registry_key,
    read_registry_key,
    write_pod_key,
)
from wsfleet.tokens import ensure_auth_key, mint_token, read_auth_key


class FleetKeys:
    """Where the state dir's keys are; :meth:`ensure` creates those that are missing."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.run_dir = state_dir / "run"
        self.auth_key_path = state_dir / "auth.key"
        self.admin_token_path = state_dir / TOKEN_FILE
        self.registry_key_path = state_dir / KEY_FILE
        self.api_key_path, self.api_keys_path = (
            state_dir / "api.key",
            state_dir / "api-keys.yaml",
        )

    def ensure(self) -> None:
        """Create whatever key the state dir lacks (keep those it has)."""
        self.auth_key_path = ensure_auth_key(self.state_dir)
        self.admin_token_path = ensure_admin_token(self.state_dir)
        self.registry_key_path = ensure_registry_key(self.state_dir)
        self.api_key_path, self.api_keys_path = ensure_local_key(self.state_dir)
        fleet_ca.ensure_server_pair(self.state_dir)  # xDS is served over mTLS only

    @property
    def admin_token(self) -> str:
        return self.admin_token_path.read_text().strip()

    @property
    def api_key(self) -> str:
        return self.api_key_path.read_text().strip()

    def token(self, user_id: str, ttl_s: float = 3600) -> str:
        return mint_token(read_auth_key(self.auth_key_path), user_id, ttl_s)

    def pod_signer(self) -> PodSigner:
        """The fleet's root registry key (the operators' and the control plane's): signs
        any pod's record, derives any pod's key and admin token. No pod is given it."""
        signer = read_registry_key(self.registry_key_path)
        assert signer is not None and signer.is_root
        return signer

    def pod_admin_token(self, pod_id: str) -> str:
        """The one admin token pod ``pod_id``'s admin API accepts (the operators' token
        works only on the control plane)."""
        return self.pod_signer().admin_token(pod_id)

    def pod_key_path(self, pod_id: str) -> Path:
        """Where pod ``pod_id``'s own key file is (written when it starts)."""
        return self.run_dir / "pod-keys" / f"{pod_id}.key"

    def issue_pod_key(self, pod_id: str) -> Path:
        """Write pod ``pod_id``'s key (mode 0600, in a directory only we can list): the
        only registry credential the pod gets."""
        path = self.pod_key_path(pod_id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return write_pod_key(self.pod_signer(), pod_id, path)
