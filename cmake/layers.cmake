# persoflow_layer(NAME DEPS ...): a library of every .cpp in the layer's folder (globbed, so adding
# a file needs no CMake edit). A folder with no sources yet is an INTERFACE library.
function(persoflow_layer name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(sources)
    add_library(persoflow_${name} ${sources})
    target_include_directories(persoflow_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                               PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
    target_link_libraries(persoflow_${name} PUBLIC ${ARG_DEPS})
    add_dependencies(persoflow_${name} check_layers)
  else()
    add_library(persoflow_${name} INTERFACE)
    target_include_directories(persoflow_${name} INTERFACE ${PROJECT_SOURCE_DIR}/include)
    target_link_libraries(persoflow_${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()
