// Crash points: named places where a crash test may kill this process with SIGKILL.
//
// The environment variable PERSOFLOW_CRASH_AT="<name>:<n>" makes the n-th time (1-based) this
// process reaches crash_point("<name>") raise SIGKILL on itself, so a test can kill a real
// process at an exact point (after the k-th journal commit, between a commit and its command,
// inside a group commit) and then restart it from disk. Unset, a crash point costs one relaxed
// atomic load. Names are never reused for another place.
#pragma once

namespace persoflow {

void crash_point(const char* name);

// How many times each crash point was reached in this process, as "name count" lines, for a test
// that first counts the points of a run and then kills at each of them.
void write_crash_point_counts(const char* path);

}  // namespace persoflow
