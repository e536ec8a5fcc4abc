# Sourced by the benchmarks (run.sh, extension.sh): the job server's venv,
# made as tests/src/real.rs makes it (same place, same marker). Needs
# `root` and `say`; sets `jobserver`, `venv` and `py`.
jobserver=${OUTAGE_JOBSERVER_DIR:-$root/../shared/jobserver}
venv=${OUTAGE_JOBSERVER_VENV:-$root/target/jobserver-venv}
py=$venv/bin/python
if ! [ -x "$py" ] || ! cmp -s "$jobserver/requirements.txt" "$venv/outage-requirements.txt"; then
    say "creating the job server venv"
    rm -rf "$venv"
    "${OUTAGE_PYTHON:-python3}" -m venv "$venv"
    "$py" -m pip install --quiet --disable-pip-version-check -r "$jobserver/requirements.txt"
    cp "$jobserver/requirements.txt" "$venv/outage-requirements.txt"
fi
