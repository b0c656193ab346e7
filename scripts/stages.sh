# Sourced by test.sh and test_gpu.sh: `stage NAME` starts a timed stage; a table of every stage's wall time is
# printed when the script exits, also when a stage fails (the failing stage is marked).
_STAGE_NAMES=()
_STAGE_SECONDS=()
_STAGE_START=$SECONDS
_SCRIPT_START=$SECONDS

stage() {
  _stage_close
  _STAGE_NAMES+=("$1")
  _STAGE_START=$SECONDS
  echo "==> $1"
}

_stage_close() {
  if (( ${#_STAGE_NAMES[@]} > ${#_STAGE_SECONDS[@]} )); then
    _STAGE_SECONDS+=($(( SECONDS - _STAGE_START )))
  fi
}

_stage_summary() {
  local status=$?
  _stage_close
  echo
  echo "==> time per stage"
  local i last=$(( ${#_STAGE_NAMES[@]} - 1 ))
  for i in "${!_STAGE_NAMES[@]}"; do
    local mark=""
    (( status != 0 && i == last )) && mark="   <- failed here (exit $status)"
    printf '  %6d s  %s%s\n' "${_STAGE_SECONDS[$i]}" "${_STAGE_NAMES[$i]}" "$mark"
  done
  printf '  %6d s  total\n' $(( SECONDS - _SCRIPT_START ))
}
trap _stage_summary EXIT
