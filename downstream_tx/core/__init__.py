"""What both protocols share: the core context, node keys, tokens and farmers."""
