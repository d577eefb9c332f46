#!/bin/sh
# Open MPI rsh agent for the two-"host" test (mpi-netns.test.ts): `netns-rsh.sh HOST CMD...` runs CMD the way ssh
# would on HOST: inside the network namespace named HOST, with its own hostname (a UTS namespace).
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && eval "$*"' "$host" "$@"
