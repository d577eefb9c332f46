#!/bin/sh
# Prints 1 when Open MPI's compiler wrapper exists (binding.gyp then builds floe_mpi), else 0 and a note on stderr.
if command -v mpicxx >/dev/null 2>&1; then echo 1; else
  echo "floe: mpicxx not found, the MPI addon (pipeline parallelism) is not built; to build it: apt-get install openmpi-bin libopenmpi-dev && npx node-gyp rebuild" >&2
  echo 0
fi
