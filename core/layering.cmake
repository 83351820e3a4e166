# Build-time check of the layers' include rules (docs: core/CMakeLists.txt).
# Run as: cmake -DROOT=<source dir> -DSTAMP=<file> -P core/layering.cmake
# Fails the build, naming the file and the include, when a layer reaches
# into one it must not. Every library exports the source root as its
# include path, so the compiler alone cannot stop it.

# check(<glob under ROOT> <regex of forbidden includes> <why>)
set(_violations "")
function(check pattern forbidden why)
  file(GLOB_RECURSE files RELATIVE ${ROOT} ${ROOT}/${pattern})
  foreach(f IN LISTS files)
    file(STRINGS ${ROOT}/${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line IN LISTS lines)
      if(line MATCHES "\"(${forbidden})[^\"]*\"")
        list(APPEND _violations "${f}: ${line}  (${why})")
      endif()
    endforeach()
  endforeach()
  set(_violations "${_violations}" PARENT_SCOPE)
endfunction()

# core/ is the pure engine: no protobuf, gRPC, server or client code.
foreach(ext h cc)
  check("core/*.${ext}" "server/|client/|cbloss/|grpcpp/|google/protobuf/"
    "core/ depends on Abseil and Highway only")
  # The store is below the service: it may not include the rest of server/.
  check("server/store/*.${ext}"
    "server/[a-z_]+\\.h|client/|core/internal/"
    "server/store/ sees only itself, the proto and core/status_macros.h")
  check("server/*.${ext}" "client/|core/internal/"
    "server/ uses core's public headers only")
  check("client/*.${ext}" "server/|core/internal/"
    "the client library and CLI do not link the server or the engine")
  check("fuzz/*.${ext}" "core/internal/" "core/internal/ is private to core/")
  check("python/*.${ext}" "core/internal/" "core/internal/ is private to core/")
endforeach()
# Only the kernels benchmark may include core/internal/ (it times the row
# kernels on every instruction set).
file(GLOB_RECURSE _bench RELATIVE ${ROOT} ${ROOT}/bench/*.cc ${ROOT}/bench/*.h)
foreach(f IN LISTS _bench)
  if(NOT f STREQUAL "bench/kernels_bench.cc")
    file(STRINGS ${ROOT}/${f} lines
      REGEX "^#include \"core/internal/")
    foreach(line IN LISTS lines)
      list(APPEND _violations "${f}: ${line}  (core/internal/ is private)")
    endforeach()
  endif()
endforeach()

if(_violations)
  list(JOIN _violations "\n  " text)
  message(FATAL_ERROR "layering violations:\n  ${text}")
endif()
if(STAMP)
  file(TOUCH ${STAMP})
endif()
