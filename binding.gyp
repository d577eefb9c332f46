# node-gyp build of the floe native addon: one module, ISA-specific code selected at run time (see native/isa.h).
{
  "targets": [
    {
      "target_name": "floe",
      "sources": [
        "native/addon.cc",
        "native/pool.cc",
        "native/dispatch.cc",
        "native/sample.cc",
        "native/isa_scalar.cc",
        "native/isa_avx2.cc",
        "native/isa_avx512.cc",
        "native/train_kernels.cc",
        "native/train_isa_scalar.cc",
        "native/train_isa_avx2.cc",
        "native/train_isa_avx512.cc",
        "native/stream.cc",
        "native/convert.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2", "-O0"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++1y", "-O2", "-O0"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fopenmp-simd", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas", "-Wno-maybe-uninitialized", "-Wno-uninitialized"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "OTHER_CPLUSPLUSFLAGS": ["-std=c++17", "-O3", "-fopenmp-simd"]
      }
    }
  ],
  # native/mpi: the optional Open MPI binding (pipeline parallelism), a second module built only where mpicxx exists
  "conditions": [
    ["<!(sh native/mpi/probe.sh)==1", {
      "targets": [
        {
          "target_name": "floe_mpi",
          "sources": ["native/mpi/mpi_addon.cc"],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
          "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"],
          "cflags!": ["-fno-exceptions"],
          "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++1y"],
          "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "<!@(mpicxx --showme:compile)"],
          "ldflags": ["-pthread"],
          "libraries": ["<!@(mpicc --showme:link)"]
        }
      ]
    }]
  ]
}
