"""The bridge's generated code in wsfleet/api is what `make proto` makes of the .proto
today: an edit of proto/wsfleet/api/bridge.proto without regenerating fails here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("bridge_pb2.py", "bridge_pb2.pyi", "bridge_pb2_grpc.py")


def test_the_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    include = str(resources.files("grpc_tools") / "_proto")
    status = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "proto" / "wsfleet" / "api" / "bridge.proto"),
        ]
    )
    assert status == 0
    for name in GENERATED:
        made = (tmp_path / "wsfleet" / "api" / name).read_text()
        assert made == (ROOT / "wsfleet" / "api" / name).read_text(), f"{name}: run make proto"
