"""Background processes of nborch: worker, gateway, router, supervisor, consensus."""
