# Shared by the VNN-COMP scripts (sourced): argument-count and version checks.
# check_args COUNT "USAGE" "$@": exit 1 with a usage line unless there are COUNT
# arguments and the first is the version string v1.
check_args() {
    local count="$1" usage="$2"
    shift 2
    if [ "$#" -ne "$count" ]; then
        echo "usage: $(basename "$0") $usage" >&2
        exit 1
    fi
    if [ "$1" != "v1" ]; then
        echo "error: expected version string v1, got '$1'" >&2
        exit 1
    fi
}
