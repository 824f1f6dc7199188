# The child process of the key-generation kill test (card_test.cpp).
add_executable(keygen_child ${CMAKE_CURRENT_SOURCE_DIR}/devices/keygen_child.cpp)
target_link_libraries(keygen_child PRIVATE persoflow_devices)
cmake_language(DEFER CALL add_dependencies devices_tests keygen_child)
