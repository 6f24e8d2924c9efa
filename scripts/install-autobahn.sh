#!/usr/bin/env bash
# Install Autobahn|Testsuite (wstest, Python 2.7 only) without touching the system Python or apt
# sources: Debian bullseye's python2.7 .debs are downloaded with a private apt config and unpacked
# with dpkg -x into $DEST/py27; pip 20.3.4 (last with py2.7 support) installs the pinned deps.
# Needs: root (apt download), gcc (wsaccel/ujson C extensions), python3 with pip (to fetch py2 wheels).
set -euo pipefail
DEST=${1:-.autobahn}
mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd)
APTD="$DEST/apt"
mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial" "$APTD/debs" "$DEST/py27" "$DEST/wheels"
# the Debian mirror this machine's apt is already configured with
MIRROR=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bullseye main" > "$APTD/sources.list"
APT_OPTS=(-o Dir::Etc::SourceList="$APTD/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$APTD/lists" -o Dir::Cache="$APTD/cache" -o APT::Sandbox::User=root)
apt-get -q "${APT_OPTS[@]}" update
(cd "$APTD/debs" && apt-get -q "${APT_OPTS[@]}" download \
   python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libpython2.7-dev libssl1.1 libffi7)
for d in "$APTD"/debs/*.deb; do dpkg -x "$d" "$DEST/py27"; done
# py2-compatible pip/setuptools/wheel, fetched by the machine's python3 pip (before PYTHONHOME is set)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 2.7 --implementation cp \
   --abi cp27mu --platform manylinux1_x86_64 -d "$DEST/wheels" pip==20.3.4 setuptools==44.1.1 wheel==0.37.1
PY="$DEST/py27/usr/bin/python2.7"
export PYTHONHOME="$DEST/py27/usr" LD_LIBRARY_PATH="$DEST/py27/usr/lib/x86_64-linux-gnu"
"$PY" "$DEST/wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install -q --disable-pip-version-check --no-index \
   --find-links "$DEST/wheels" --target "$PYTHONHOME/lib/python2.7/dist-packages" pip==20.3.4 setuptools==44.1.1 wheel==0.37.1
# The 25.10.1 sdist lacks requirements.txt, so its install_requires is empty: pass its pins here.
cat > "$DEST/requirements.txt" <<'REQ'
autobahntestsuite==25.10.1
autobahn[accelerate,twisted]==0.10.9
txaio==2.1.0
incremental==16.10.1
cryptography==3.3.2
pyOpenSSL==19.1.0
Twisted==19.10.0
zope.interface==4.6.0
jinja2==2.11.3
markupsafe==1.1.1
Werkzeug==1.0.1
klein==17.10.0
service_identity==18.1.0
unittest2==1.1.0
six==1.16.0
REQ
CFLAGS="-I$PYTHONHOME/include -I$PYTHONHOME/include/python2.7" "$PY" -m pip install -q --disable-pip-version-check \
   --no-warn-script-location --target "$DEST/site" -r "$DEST/requirements.txt"
cat > "$DEST/wstest" <<'WRAP'
#!/bin/sh
D=$(cd "$(dirname "$0")" && pwd)
export PYTHONHOME="$D/py27/usr" LD_LIBRARY_PATH="$D/py27/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# site.addsitedir (not PYTHONPATH) so the zope namespace .pth file is processed
exec "$D/py27/usr/bin/python2.7" -c 'import sys, site; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = "wstest"; from autobahntestsuite.wstest import run; run()' "$D/site" "$@"
WRAP
chmod +x "$DEST/wstest"
"$DEST/wstest" --autobahnversion
