"""Pure and leaf modules: settings, tokens, hashing, vocabulary, language, time, errors, logs."""
