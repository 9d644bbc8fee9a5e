"""mmkeras.data."""
