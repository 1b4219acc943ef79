//! Hostile plugins: loops, allocation, traps, recursion, floods and reaching
//! for foreign connections must cost only that plugin while another route
//! keeps answering.
