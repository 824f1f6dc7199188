# The child process of the journal crash test (journal_crash_test.cpp).
add_executable(journal_crash_child ${CMAKE_CURRENT_SOURCE_DIR}/storage/journal_crash_child.cpp)
target_link_libraries(journal_crash_child PRIVATE persoflow_test_support persoflow_storage
  persoflow_machines)
cmake_language(DEFER CALL add_dependencies storage_tests journal_crash_child)
