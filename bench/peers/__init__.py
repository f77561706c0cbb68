"""The setups library-gateway is measured against (run by bench/run.py, not shipped)."""
