"""Technical indicators: full-series functions (`series`) and the helpers signal code calls (`helpers`)."""
