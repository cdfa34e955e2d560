# Sourced by the scripts: project venv first on PATH, project-local Dagster home.
CELLSCAPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CELLSCAPE_ROOT
export PATH="$CELLSCAPE_ROOT/.venv/bin:$PATH"
export DAGSTER_HOME="$CELLSCAPE_ROOT/dagster_home"
export PYTHONUNBUFFERED=1
# CPU JAX unless the user says otherwise; quiet TensorFlow-style logs.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
dvc_locked() {  # DVC fails on its repository lock when two commands overlap: serialise them.
  mkdir -p "$CELLSCAPE_ROOT/.dvc/tmp"
  flock "$CELLSCAPE_ROOT/.dvc/tmp/cellscape-dvc.lock" dvc "$@"
}
