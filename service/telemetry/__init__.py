"""What the service tells its operators: structured log lines (logs.py) and Prometheus metrics
(metrics.py). Every layer may import it; it imports nothing of the service."""
