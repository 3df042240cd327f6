"""The built-in plugins, registered the same way any third-party plugin is."""
