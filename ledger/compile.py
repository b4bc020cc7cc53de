"""Compile contracts/ with solc 0.8.37 through py-solc-x and write the committed artifacts.

The compiler is the native solc 0.8.37 when py-solc-x has it installed (or MEDSWARM_SOLC
points at one), else solc-js from npm through contracts/solcjs-shim.js. Both produce the
same bytecode for the same version and settings. Run `medswarm ledger compile` after
editing a contract; a test recompiles and compares the artifacts byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import solcx
from packaging.version import Version
from solcx.install import get_executable

from ledger.artifacts import (
    ARTIFACTS_DIR,
    CONTRACTS_DIR,
    REPO_ROOT,
    SOURCES_DIR,
    TEST_SOURCES_DIR,
    artifact_path,
)
from ledger.errors import CompilerUnavailable

SOLC_VERSION = "0.8.37"
EVM_VERSION = "shanghai"  # runs on Anvil, Ganache 7.9 and eth-tester alike
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": EVM_VERSION,
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}
SHIM = CONTRACTS_DIR / "solcjs-shim.js"
_VERSION_RE = re.compile(r"Version: (\d+\.\d+\.\d+\+commit\.[0-9a-f]+)")


def find_compiler() -> Path:
    """The solc binary to hand to py-solc-x; raises CompilerUnavailable with what was tried."""
    explicit = os.environ.get("MEDSWARM_SOLC")
    if explicit:
        return Path(explicit)
    if Version(SOLC_VERSION) in solcx.get_installed_solc_versions():
        return Path(get_executable(SOLC_VERSION))
    node = shutil.which("node")
    solcjs = REPO_ROOT / "node_modules" / "solc" / "package.json"
    if node and solcjs.exists():
        return SHIM
    raise CompilerUnavailable(
        f"solc {SOLC_VERSION} not found: no native compiler installed by py-solc-x, "
        f"MEDSWARM_SOLC unset, and solc-js missing ({solcjs}; run `npm install`)"
    )


def compiler_version(solc: Path) -> str:
    """'0.8.37+commit.f401782d' without the platform suffix (native and solc-js agree)."""
    out = subprocess.run([str(solc), "--version"], capture_output=True, text=True, check=True)
    match = _VERSION_RE.search(out.stdout)
    if not match:
        raise CompilerUnavailable(f"{solc} printed no version: {out.stdout!r}")
    version = match.group(1)
    if not version.startswith(SOLC_VERSION + "+"):
        raise CompilerUnavailable(f"{solc} is solc {version}, need {SOLC_VERSION}")
    return version


def _sources() -> dict[str, Path]:
    found = {f"src/{p.name}": p for p in sorted(SOURCES_DIR.glob("*.sol"))}
    found |= {f"test/{p.name}": p for p in sorted(TEST_SOURCES_DIR.glob("*.sol"))}
    return found


def compile_artifacts(solc: Path | None = None) -> dict[str, str]:
    """Compile every contract; return {contract name: artifact JSON text} (not written)."""
    solc = solc or find_compiler()
    version = compiler_version(solc)
    sources = _sources()
    texts = {key: path.read_text() for key, path in sources.items()}
    standard = {
        "language": "Solidity",
        "sources": {key: {"content": text} for key, text in texts.items()},
        "settings": SETTINGS,
    }
    output = solcx.compile_standard(standard, solc_binary=solc, allow_empty=False)
    artifacts: dict[str, str] = {}
    for source_key, contracts in sorted(output["contracts"].items()):
        sha = hashlib.sha256(texts[source_key].encode()).hexdigest()
        for name, compiled in sorted(contracts.items()):
            if not compiled["evm"]["bytecode"]["object"]:
                continue  # interfaces
            doc = {
                "contractName": name,
                "sourceName": f"contracts/{source_key}",
                "sourceSha256": sha,
                "compiler": {"version": version, "settings": SETTINGS},
                "abi": compiled["abi"],
                "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            }
            artifacts[name] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return artifacts


def write_artifacts(directory: Path = ARTIFACTS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in compile_artifacts().items():
        path = artifact_path(name, directory)
        path.write_text(text)
        written.append(path)
    return written
