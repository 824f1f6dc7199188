# crashtest.quick: persoflow-crashtest --quick (every fault point at its first and last operation,
# 8 SIGKILLs, 1 card) against the real CM host and SoftHSM2 cards. Labelled `crash` and `slow`:
# it takes a minute or two, so the default quick run (-LE slow) leaves it out.
add_test(NAME crashtest.quick COMMAND persoflow-crashtest --quick)
set_tests_properties(crashtest.quick PROPERTIES LABELS "crash;slow" TIMEOUT 300)
# The command-line test of persoflow-crashtest is in tests/integration.
add_dependencies(integration_tests persoflow-crashtest)
