"""Views over status snapshots; no business logic."""
