# The project's virtual environment at .venv, with Debian's bcc made importable
# (the PyPI package named "bcc" is unrelated and must never be installed).
PY=${MIGPROF_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv
fi
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d /usr/lib/python3/dist-packages/bcc ] && [ ! -e "$SITE/bcc" ]; then
  ln -sfn /usr/lib/python3/dist-packages/bcc "$SITE/bcc"
fi
STAMP=.venv/.migprof-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  log "pip install -e .[test]"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$STAMP"
fi
