# scssl_reuse_pch(<target>): compile <target> with the SDK's precompiled <torch/torch.h>.
# GCC only accepts a precompiled header built with the same -fPIC/-fPIE setting, and CMake compiles
# executables with -fPIE; so executables are compiled with -fPIC (still linkable as PIE).
function(scssl_reuse_pch target)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${target} PRIVATE -fPIC)
  endif()
  target_precompile_headers(${target} REUSE_FROM scssl_sdk)
endfunction()
