"""Evaluation: benchmark verification (insightface protocol), identity separability (pyeer
semantics), identity leakage against the training set, and benchmark file readers."""
