// A Card that fails on purpose at the numbered fault points of the devices layer
// (common/fault_points.hpp: a card pulled before or after a write, CKR_DEVICE_ERROR, the user PIN
// blocked, pcscd gone). open_card() wraps every card it opens when PERSOFLOW_FAULT or
// PERSOFLOW_FAULT_COUNT is set; otherwise the real card is returned as it is (no wrapper, no cost).
#pragma once

#include <memory>

#include "persoflow/common/status.hpp"
#include "persoflow/devices/card.hpp"

namespace persoflow::devices {

// The card itself when no fault is active, else a FaultyCard that forwards to it.
std::unique_ptr<Card> wrap_card_with_faults(std::unique_ptr<Card> card);

// pcscd gone (fault point 5) for what is not a Card call: opening a card, listing tokens.
// OK when the point does not fire.
Status reader_service_fault(const char* what);

}  // namespace persoflow::devices
