"""What runs: the worker and its scheduler jobs, the reconcile tick, the lease, event loops."""
