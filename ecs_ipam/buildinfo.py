"""The plugin's version, and what build.sh stamps into the shipped copy."""

VERSION = "0.1.0"
# tools/pack.py rewrites these in the staged copy it packs; a source checkout leaves them unset.
GIT_SHORT_HASH = ""
BUILT = ""
DIRTY = False  # whether the packed sources differ from the commit GIT_SHORT_HASH names
