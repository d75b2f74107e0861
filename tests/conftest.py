"""Settings shared by every test."""

from hypothesis import settings

# Timings are not what the property tests check: on a loaded 2-core CI machine a
# slow example must not fail a run (hypothesis' default deadline is 200 ms).
settings.register_profile("default", deadline=None)
settings.load_profile("default")
