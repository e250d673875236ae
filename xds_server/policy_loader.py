"""Read a policy file and explain every problem with its file and line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from wsfleet.errors import ConfigError
from xds_server.policy import Policy, reference_problems


class PolicyError(ConfigError):
    """A policy file that cannot be used; ``str()`` names file, line and problem."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


def default_policy_text() -> str:
    """The embedded default policy (the commented example of the format)."""
    return resources.files("xds_server").joinpath("default_policy.yaml").read_text()


def load_policy_file(path: Path) -> Policy:
    """Load and validate a policy file; raise :class:`PolicyError` when it is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(str(path), None, "policy file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
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
