"""Everything that reaches the network: resumable HTTP downloads (:mod:`.download`), Google
Drive (:mod:`.drive`), safe archive extraction (:mod:`.archive`) and the dataset archives
with their sources (:mod:`.sources`)."""
