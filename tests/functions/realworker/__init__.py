"""function_app.py in the real Python worker, driven by the host stand-in."""
