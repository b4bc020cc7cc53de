"""Read-only web pages: the simulator's live dashboard and the ledger explorer. Served on
127.0.0.1 by uvicorn; charts come from chart.js, pinned in package.json and served locally."""
