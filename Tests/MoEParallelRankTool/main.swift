// Filled in with the rank runner.
print("rank tool")
