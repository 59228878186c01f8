"""nborch: Jupyter-first orchestration of executor replicas, shards and Raft groups."""
