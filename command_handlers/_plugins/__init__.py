"""The plugin layer's parts: loading plugins by name, the executor registry, listener dispatch."""
