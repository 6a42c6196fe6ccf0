"""What the launcher tells a user about an ended session's workspace (launch, stop): the
final save made, or NOT made with why and what is kept — never silence on a failure."""

from __future__ import annotations

from launcher.launch import workspace_outcome


def test_a_failed_final_save_is_said_with_its_reason_and_what_is_kept() -> None:
    said = workspace_outcome({"workspace": {"name": "thesis", "read_only": False, "report": {
        "saved": False, "files": 3, "bytes": 10, "error": "quota exceeded"}}})
    assert said is not None and "NOT saved" in said and "quota exceeded" in said
    assert "everest-jupyter workspaces thesis" in said


def test_a_made_final_save_is_said_and_nothing_without_a_report() -> None:
    saved = workspace_outcome({"workspace": {"name": "w", "report": {
        "saved": True, "files": 2, "bytes": 5}}})
    assert saved == "workspace w saved (2 files, 5 bytes)"
    assert workspace_outcome({"workspace": {"name": "w", "report": None}}) is None
    assert workspace_outcome({"workspace": None}) is None
    assert workspace_outcome({"workspace": {"name": "w", "read_only": True, "report": {
        "saved": False}}}) is None  # a read-only copy saves nothing by design
