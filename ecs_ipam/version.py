"""The plugin's version, and what build.sh stamps into the shipped copy."""

VERSION = "0.1.0"
# build.sh rewrites these two in the staged copy it packs; a source checkout leaves them empty.
GIT_SHORT_HASH = ""
BUILT = ""
