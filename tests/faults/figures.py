"""The campaign's per-schedule figures, shared by the tests (append) and conftest (report)."""
SCHEDULES: list[dict] = []
