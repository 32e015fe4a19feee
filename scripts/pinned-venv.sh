# Sourced by the scripts that test against third-party Python code.
# pinned_venv VENV PIN...: make VENV (a virtual environment) hold these exact pins; pip runs
# only when they changed (a stamp file in VENV remembers the last set installed).
pinned_venv() {
  local venv=$1
  shift
  local stamp="$venv/.sark-pins"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$*" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    echo "$*" > "$stamp"
  fi
}
