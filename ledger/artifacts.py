"""Compiled contract artifacts committed under contracts/artifacts/: load them, find paths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import ArtifactError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
SOURCES_DIR = CONTRACTS_DIR / "src"
TEST_SOURCES_DIR = CONTRACTS_DIR / "test"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_sha256: str


def artifact_path(name: str, directory: Path = ARTIFACTS_DIR) -> Path:
    return directory / f"{name}.json"


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    path = artifact_path(name, directory)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc}") from exc
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler_version=data["compiler"]["version"],
        source_sha256=data["sourceSha256"],
    )
