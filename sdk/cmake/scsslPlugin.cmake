# scssl_add_plugin_note(<target>)
#
# After each link of <target>, writes the plugin's description into the library's ELF section
# .scssl_plugin (SCSSL_NOTE_SECTION), where scssl-host reads it without running the plugin's code.
# scssl_add_plugin() calls it; call it yourself for a plugin library made another way.
function(scssl_add_plugin_note target)
  if(NOT CMAKE_OBJCOPY)
    message(FATAL_ERROR "scssl_add_plugin_note(${target}): no objcopy found (install binutils)")
  endif()
  set(note ${CMAKE_CURRENT_BINARY_DIR}/${target}.scssl-note)
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND scssl::plugin-note $<TARGET_FILE:${target}> ${note}
    COMMAND ${CMAKE_OBJCOPY} --remove-section=.scssl_plugin
            --add-section .scssl_plugin=${note} $<TARGET_FILE:${target}>
    COMMENT "Writing the plugin note of ${target}"
    VERBATIM)
endfunction()

# scssl_add_plugin(<name> KIND <dataset|augmentation|method|evaluator> SOURCES <files...>
#                  [LIBRARIES <targets...>])
#
# Builds one plugin as a shared library named libscssl-<kind>-<name>.so that exports only its
# entry point and carries its plugin note. Used in this tree and, through find_package(scssl), by
# out-of-tree plugins (C++17; a Release build unless CMAKE_BUILD_TYPE says otherwise).
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
  target_compile_features(${target} PRIVATE cxx_std_17)
  scssl_add_plugin_note(${target})
  set_property(GLOBAL APPEND PROPERTY SCSSL_PLUGIN_TARGETS ${target})
  # `cmake --install` puts the plugin where scssl-host looks by default: in this tree the install
  # tree's plugin folder, out of tree the folder of the scssl installation that was found.
  if(DEFINED SCSSL_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${SCSSL_PLUGIN_INSTALL_DIR})
  elseif(DEFINED SCSSL_PLUGIN_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${SCSSL_PLUGIN_DIR})
  endif()
endfunction()
