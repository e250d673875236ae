"""Read a policy file and explain every problem with its file and line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import yaml
from pydantic import ValidationError

from wsfleet.bounded_files import UnreadableFile, read_bounded
from wsfleet.errors import ConfigError
from xds_server.certificates import CertificateProblem, LoadedCertificate, load_certificate
from xds_server.policy import Policy, reference_problems


class PolicyError(ConfigError):
    """A policy file that cannot be used; ``str()`` names file, line and problem."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class PolicyBundle:
    """A validated policy with the certificates it names, read and checked."""

    policy: Policy
    certificates: Mapping[str, LoadedCertificate] = field(
        default_factory=lambda: MappingProxyType({})
    )


def load_bundle(path: Path) -> PolicyBundle:
    """Load a policy file and every certificate it names; any problem is a :class:`PolicyError`."""
    policy = load_policy_file(path)
    return PolicyBundle(policy, load_certificates(policy, path))


def load_certificates(policy: Policy, path: Path) -> Mapping[str, LoadedCertificate]:
    loaded: dict[str, LoadedCertificate] = {}
    for index, spec in enumerate(policy.certificates):
        try:
            loaded[spec.name] = load_certificate(spec, path.parent)
        except CertificateProblem as exc:
            line = _certificate_line(path, index)
            raise PolicyError(str(path), line, f"certificates.{index}: {exc}") from None
    return MappingProxyType(loaded)


def _certificate_line(path: Path, index: int) -> int | None:
    try:
        text = read_bounded(path, MAX_POLICY_BYTES).decode("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (UnreadableFile, UnicodeDecodeError, yaml.YAMLError):
        return None
    return _line_of(root, ("certificates", index))


def default_bundle() -> PolicyBundle:
    """The embedded default policy (it names no certificates)."""
    return PolicyBundle(parse_policy(default_policy_text(), "<embedded default policy>"))


def default_policy_text() -> str:
    """The embedded default policy (the commented example of the format)."""
    return resources.files("xds_server").joinpath("default_policy.yaml").read_text()


MAX_POLICY_BYTES = 1 << 20
"""A policy file larger than this is refused (a real one is a few KB; parsing a 20 MB
file held the control plane for 13 s)."""


def load_policy_file(path: Path) -> Policy:
    """Load and validate a policy file; raise :class:`PolicyError` when it is unusable."""
    try:
        text = read_bounded(path, MAX_POLICY_BYTES).decode("utf-8")
    except UnreadableFile as exc:
        problem = "policy file not found" if str(exc) == "file not found" else f"policy file: {exc}"
        raise PolicyError(str(path), None, problem) from None
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), None, f"cannot read policy file: {exc}") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML text; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise PolicyError(source, line, f"not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, None, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(source, 1, "a policy is a YAML mapping with listeners, routes, pools")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise _located(source, root, tuple(error["loc"]), message) from None
    problems = reference_problems(policy)
    if problems:
        loc, message = problems[0]
        raise _located(source, root, loc, message)
    return policy


def _located(
    source: str, root: yaml.Node | None, loc: tuple[object, ...], message: str
) -> PolicyError:
    where = ".".join(str(part) for part in loc)
    return PolicyError(source, _line_of(root, loc), f"{where}: {message}" if where else message)


def _line_of(node: yaml.Node | None, loc: tuple[object, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its deepest existing parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child = value if not isinstance(value, yaml.ScalarNode) else key
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
