# The engine tests' order machine is shared by actors_tests and crash_child (the process the crash
# test kills with SIGKILL and restarts).
set(order_machine_sources ${CMAKE_CURRENT_SOURCE_DIR}/actors/order_machine.cpp)
list(APPEND test_sources ${order_machine_sources})

add_executable(crash_child ${CMAKE_CURRENT_SOURCE_DIR}/actors/crash_child.cpp ${order_machine_sources})
target_include_directories(crash_child PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/actors)
target_link_libraries(crash_child PRIVATE persoflow_actors SQLite::SQLite3 fmt::fmt)
cmake_language(DEFER CALL add_dependencies actors_tests crash_child)

# The crash test is its own executable and ctest entry, labelled `actors` and `crash`, so it can be
# run alone (ctest -L crash) and is not discovered twice.
add_executable(actors_crash_test ${CMAKE_CURRENT_SOURCE_DIR}/actors/crash_main.cpp ${order_machine_sources})
target_include_directories(actors_crash_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/actors)
target_link_libraries(actors_crash_test PRIVATE persoflow_test_support persoflow_actors
  SQLite::SQLite3 GTest::gtest_main fmt::fmt)
add_dependencies(actors_crash_test crash_child persoflow)
add_test(NAME actors.crash COMMAND actors_crash_test)
set_tests_properties(actors.crash PROPERTIES LABELS "actors;crash" TIMEOUT 600)
