"""What people read: Markdown tables, prose findings and plots, from results files alone."""
