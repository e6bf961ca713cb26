# Shell functions shared by the launch scripts; they source it from the repository root.

# Prints the script's header comment (its usage).
usage() { sed -n '2,/^set -euo/{/^# /s/^# //p}' "$0"; }

# Runs a command, or with dry_run=true prints it, quoted so that a shell reads it back the same.
run() {
  if $dry_run; then
    local word quoted line=()
    for word; do
      printf -v quoted '%q' "$word"
      [[ $quoted == "$word" ]] || quoted=${word@Q}
      line+=("$quoted")
    done
    echo "${line[*]}"
  else
    "$@"
  fi
}
