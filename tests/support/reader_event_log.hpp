// Collects a ReaderWatcher's events (with the time each arrived) and lets a test or benchmark
// wait for one, bounded, on a condition variable: no sleeps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "persoflow/devices/readers.hpp"

namespace persoflow::testing {

class ReaderEventLog {
 public:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    devices::ReaderEvent event;
    Clock::time_point at;
  };

  // The callback to give watch_readers(); the log must outlive the watcher.
  devices::ReaderWatcher::Callback callback() {
    return [this](const devices::ReaderEvent& e) {
      std::lock_guard lock(mutex_);
      entries_.push_back({e, Clock::now()});
      cv_.notify_all();
    };
  }

  // The index of the first event at or after `from` matching kind (and reader, when not empty),
  // waiting up to timeout; nullopt on timeout.
  std::optional<std::size_t> wait_for(
      devices::ReaderEvent::Kind kind, std::size_t from = 0, const std::string& reader = {},
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    std::optional<std::size_t> found;
    cv_.wait_for(lock, timeout, [&] {
      for (std::size_t i = from; i < entries_.size(); ++i) {
        if (entries_[i].event.kind == kind &&
            (reader.empty() || entries_[i].event.reader == reader)) {
          found = i;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  Entry at(std::size_t index) const {
    std::lock_guard lock(mutex_);
    return entries_.at(index);
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }
  std::size_t count(devices::ReaderEvent::Kind kind, std::size_t from = 0) const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (std::size_t i = from; i < entries_.size(); ++i) n += entries_[i].event.kind == kind;
    return n;
  }
  // Every event, one per line, for failure messages.
  std::string dump() const {
    std::lock_guard lock(mutex_);
    std::ostringstream out;
    for (const auto& e : entries_) {
      out << devices::to_string(e.event.kind) << " '" << e.event.reader << "' " << e.event.atr_hex
          << " " << e.event.detail << "\n";
    }
    return out.str();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;
};

}  // namespace persoflow::testing
