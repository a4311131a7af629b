# Third-party packages. Torch comes from CMAKE_PREFIX_PATH (Debian's libtorch-dev or the LibTorch
# inside a pip-installed PyTorch); nothing here hard-codes a distribution's paths.
find_package(Torch REQUIRED)
find_package(Threads REQUIRED)
find_package(Boost 1.71 REQUIRED COMPONENTS program_options)
find_package(HDF5 REQUIRED COMPONENTS C)
# zlib (which HDF5 needs anyway): the gzip-compressed text of 10x Genomics matrix folders (tenx).
find_package(ZLIB REQUIRED)
find_package(spdlog REQUIRED)

# toml++ is header-only: use its CMake package when installed, else a folder of its headers.
find_package(tomlplusplus QUIET)
if(TARGET tomlplusplus::tomlplusplus)
  set(SCSSL_TOML_TARGET tomlplusplus::tomlplusplus)
else()
  set(TOMLPLUSPLUS_INCLUDE_DIR "" CACHE PATH "Folder holding toml++/toml.h (toml++'s include/) when no package is installed")
  find_path(SCSSL_TOML_INCLUDE toml++/toml.h HINTS ${TOMLPLUSPLUS_INCLUDE_DIR})
  if(NOT SCSSL_TOML_INCLUDE)
    message(FATAL_ERROR "toml++ not found: install libtomlplusplus-dev or pass -DTOMLPLUSPLUS_INCLUDE_DIR=<toml++'s include folder, containing toml++/toml.h>")
  endif()
  add_library(scssl_tomlplusplus INTERFACE)
  target_include_directories(scssl_tomlplusplus SYSTEM INTERFACE ${SCSSL_TOML_INCLUDE})
  set(SCSSL_TOML_TARGET scssl_tomlplusplus)
endif()

# Boost.DLL is header-only when it uses std::filesystem instead of Boost.Filesystem.
add_library(scssl_boost_dll INTERFACE)
target_compile_definitions(scssl_boost_dll INTERFACE BOOST_DLL_USE_STD_FS)
target_link_libraries(scssl_boost_dll INTERFACE Boost::headers ${CMAKE_DL_LIBS})

add_library(scssl_hdf5_c INTERFACE)
target_include_directories(scssl_hdf5_c SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(scssl_hdf5_c INTERFACE ${HDF5_C_LIBRARIES} ${HDF5_LIBRARIES})
