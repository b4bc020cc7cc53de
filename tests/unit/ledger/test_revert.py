from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector as selector

from ledger.artifacts import load_artifact
from ledger.errors import LedgerRevert
from ledger.revert import ErrorDecoder, to_revert

DECODER = ErrorDecoder(load_artifact("Consortium").abi)


def test_decodes_custom_errors_with_named_arguments() -> None:
    data = selector("EpochNotClosed(uint64,uint256,uint256)") + encode(
        ["uint64", "uint256", "uint256"], [4, 1, 5]
    )
    assert DECODER.decode(data) == (
        "EpochNotClosed",
        {"epoch": 4, "membersPast": 1, "activeMembers": 5},
    )


def test_decodes_builtin_errors_and_unknown_data() -> None:
    assert DECODER.decode(selector("Error(string)") + encode(["string"], ["no"])) == (
        "Error",
        {"reason": "no"},
    )
    assert DECODER.decode(selector("Panic(uint256)") + encode(["uint256"], [0x11])) == (
        "Panic",
        {"code": 0x11},
    )
    assert DECODER.decode(b"\xde\xad\xbe\xef")[0] == "UnknownError"
    assert DECODER.decode(b"")[0] == "Reverted"


def test_non_revert_exceptions_are_not_reverts() -> None:
    assert to_revert(DECODER, ValueError("boom"), {}) is None


def test_revert_message_names_error_and_values() -> None:
    err = LedgerRevert("AlreadyCommitted", {"member": "0xabc", "round": 3}, {"function": "commit"})
    assert str(err) == "AlreadyCommitted(member='0xabc', round=3) in commit"
    assert err.arguments["round"] == 3
