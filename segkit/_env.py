"""Process-wide settings applied before third-party imports (no I/O here)."""

import os

# albumentations checks PyPI for a newer release at import time; segkit never
# wants that network access (there may be none), so switch it off first.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
