# scssl_add_plugin(<name> KIND <dataset|augmentation|method|evaluator> SOURCES <files...>
#                  [LIBRARIES <targets...>])
#
# Builds one plugin as a shared library named libscssl-<kind>-<name>.so that exports only its
# entry point. Used in this tree and, through find_package(scssl), by out-of-tree plugins.
function(scssl_add_plugin name)
  cmake_parse_arguments(ARG "" "KIND" "SOURCES;LIBRARIES" ${ARGN})
  set(kinds dataset augmentation method evaluator)
  if(NOT ARG_KIND IN_LIST kinds)
    message(FATAL_ERROR "scssl_add_plugin(${name}): KIND must be one of ${kinds}")
  endif()
  set(target scssl-${ARG_KIND}-${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE scssl::sdk ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
  if(DEFINED SCSSL_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${SCSSL_PLUGIN_OUTPUT_DIR})
  endif()
  # Inside this tree every plugin reuses the SDK's precompiled torch header.
  if(TARGET scssl_sdk AND NOT SCSSL_NO_PCH_REUSE)
    target_precompile_headers(${target} REUSE_FROM scssl_sdk)
  endif()
  set_property(GLOBAL APPEND PROPERTY SCSSL_PLUGIN_TARGETS ${target})
  if(DEFINED SCSSL_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${SCSSL_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
