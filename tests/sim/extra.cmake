# The 1,000-reader run is its own executable and ctest entry, labelled `sim` and `slow`, so the
# default run (-LE slow) keeps the short version only (station_test.cpp).
add_executable(sim_scale_test ${CMAKE_CURRENT_SOURCE_DIR}/sim/scale_main.cpp)
target_link_libraries(sim_scale_test PRIVATE persoflow_test_support persoflow_sim GTest::gtest_main)
add_test(NAME sim.scale1000 COMMAND sim_scale_test)
set_tests_properties(sim.scale1000 PROPERTIES LABELS "sim;slow" TIMEOUT 1200)
# The in-flight resume test runs `persoflow-bench resume` (a child killed with SIGKILL).
cmake_language(DEFER CALL add_dependencies sim_tests persoflow-bench)
