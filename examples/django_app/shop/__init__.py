"""An example Django shop whose orders are paid through Kraken Pay."""
